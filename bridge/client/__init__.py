"""The client side: the control channel's client half, starting and stopping a supervisor."""
