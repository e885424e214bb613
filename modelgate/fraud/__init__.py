"""The demo's fraud-detection model: synthetic transactions (data), XGBoost runs (train), Comet offline
tracking (tracking) and scoring through a deployed endpoint (score). modelgate/demo.py tells the story."""
