"""rulekit: the risk and trade-management layer between a trading bot's signals and its exchange."""

__version__ = "0.1.0"
