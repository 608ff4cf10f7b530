"""Train: supervised fine-tuning through TRL, PEFT and bitsandbytes."""
