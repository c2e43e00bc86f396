"""Provision least-privilege RabbitMQ MQTT accounts from a declarative file."""
