"""The approver: approval requests per stage, policies, decisions and their audit trail."""
