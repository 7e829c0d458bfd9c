"""The receiver's processing stages, installed as ``otel_audio.processors``.

Every stage implements :class:`otel_audio.processors.base.Processor` and reads the columnar
batches defined in :mod:`otel_audio.processors.base`. The SDK side never imports this package.
"""
