"""The receiver service (``otel-audio serve``): OTLP in, processor chain, store, query API.

Modules: ``config`` (YAML settings), ``decode`` and ``otlp_json`` (OTLP -> Arrow batches),
``cardinality`` (series budgets), ``auth`` (bearer tokens, TLS), ``ingest`` (admission,
durability, partial success), ``chain`` (the processor chain), ``grpc_server`` and
``http_server`` (the OTLP transports), ``selfmon`` (the receiver's own metrics), and
``service`` (wiring it all together, start and shutdown).
"""
