"""Training: optimizer, schedules, trainer loop, checkpoints, distributed wrapping."""
