"""The perl side: the line protocol, the persistent perl child and its host, script output, integrations."""
