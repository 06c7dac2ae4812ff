"""The sync back to OMi: settings, the gateway's HTTP, the omi/change topic and its subscriber."""
