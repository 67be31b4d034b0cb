"""The local cloud for private brokers: an AWS-compatible shadow service and a broker launcher."""
