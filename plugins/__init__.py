"""Built-in adapters (market data, exchanges, signal sources), each a pluggy plugin."""
