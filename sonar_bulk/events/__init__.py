"""Webhook events: the durable store, the receiver, collecting over a window, the export, and
the columns joined to a bulk run's results."""
