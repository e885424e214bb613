"""The notifier: tells people about approval requests, decisions and deployments, once per channel."""
