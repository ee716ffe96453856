//! Administrative commands: migrate, create workspaces, create tokens.

use anyhow::Context;
use flowline_core::id::WorkspaceId;
use flowline_core::role::Role;
use flowline_core::token::ClearToken;
use flowline_store::StoreError;
use flowline_store::tenancy::{Actor, NewMember, NewWorkspace};

use crate::config::Config;
use crate::database;

const CLI_ACTOR: &str = "cli";

/// `flowline migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    database::open(config).await?;
    eprintln!("flowline: {} is up to date", database::describe(config));
    Ok(())
}

/// `flowline workspace create`.
pub async fn create_workspace(config: &Config, name: &str, json: bool) -> anyhow::Result<()> {
    let name = name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.chars().count() <= 200,
        "the workspace name must be 1 to 200 characters"
    );
    let store = database::open(config).await?;
    let token = ClearToken::generate();
    let created = store
        .create_workspace(NewWorkspace {
            name: name.to_owned(),
            owner_name: "Owner".to_owned(),
            token_name: "owner (cli)".to_owned(),
            token_hash: token.hash(),
            actor: Actor::system(CLI_ACTOR),
        })
        .await
        .context("creating the workspace")?;
    if json {
        println!(
            "{}",
            serde_json::json!({"workspaceId": created.workspace.id, "token": token.expose()})
        );
    } else {
        println!(
            "Created workspace \"{}\" ({}).",
            created.workspace.name, created.workspace.id
        );
        println!("Owner token (shown once, store it now): {}", token.expose());
    }
    Ok(())
}

/// `flowline token create`.
pub async fn create_token(
    config: &Config,
    workspace: &str,
    role: Role,
    name: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let workspace: WorkspaceId = workspace
        .parse()
        .with_context(|| format!("`{workspace}` is not a workspace id"))?;
    let name = name.unwrap_or_else(|| format!("{role} (cli)"));
    anyhow::ensure!(
        !name.trim().is_empty() && name.chars().count() <= 200,
        "the name must be 1 to 200 characters"
    );
    let store = database::open(config).await?;
    match store.get_workspace(workspace).await {
        Err(StoreError::NotFound(_)) => anyhow::bail!("no workspace {workspace}"),
        other => other.context("reading the workspace")?,
    };
    let token = ClearToken::generate();
    let (_, record) = store
        .create_member_with_token(
            workspace,
            &Actor::system(CLI_ACTOR),
            NewMember {
                name: name.clone(),
                email: None,
                role,
            },
            name,
            token.hash(),
        )
        .await
        .context("creating the token")?;
    if json {
        println!("{}", serde_json::json!({"token": token.expose()}));
    } else {
        println!(
            "Created a {role} token ({}) for workspace {workspace}.",
            record.id
        );
        println!("Token (shown once, store it now): {}", token.expose());
    }
    Ok(())
}
