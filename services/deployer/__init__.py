"""The deployer: deployments per stage, the Parameter Store pointers, rollback history."""
