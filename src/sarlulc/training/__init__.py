"""The Accelerate training loop shared by pretraining and fine-tuning."""
