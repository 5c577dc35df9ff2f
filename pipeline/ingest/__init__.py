"""Getting chunks in: cutting recordings and publishing them to Kafka (with claim checks)."""
