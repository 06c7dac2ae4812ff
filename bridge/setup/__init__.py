"""One-off setup tools: a new home, copying a home's event core to another store."""
