"""SLOs: definitions (spec), maths (compute), burn-rate rules (alerts), the chain stage (processor)."""
