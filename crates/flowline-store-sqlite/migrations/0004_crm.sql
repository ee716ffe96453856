-- The CRM side at work: round-robin order (an agent's `rotation` is the workspace's highest plus
-- one when it takes an assignment; the lowest eligible goes next), event-started run depth, lookups by agent and card.

ALTER TABLE agents ADD COLUMN last_assigned_at TEXT;
ALTER TABLE agents ADD COLUMN assigned_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN rotation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE flow_executions ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX contacts_agent ON contacts (workspace_id, assigned_agent_id) WHERE assigned_agent_id IS NOT NULL;
CREATE INDEX board_cards_contact ON board_cards (contact_id);
CREATE INDEX contact_tags_contact ON contact_tags (workspace_id, contact_id);
CREATE INDEX flow_executions_contact ON flow_executions (contact_id, id) WHERE contact_id IS NOT NULL;
CREATE INDEX subscriptions_campaign ON subscriptions (campaign_id, id);
