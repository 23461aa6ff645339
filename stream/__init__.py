"""Everything that touches Kafka, HTTP and the process: schema, Faust app, publisher, CLI."""
