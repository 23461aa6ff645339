"""Online recommendation learners and their prequential evaluation (no Kafka in here)."""
