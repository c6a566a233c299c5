"""Model data collection: every scored request's input and output, shipped to blob storage.

Workers append records to a spool (`spool`) before they answer; the supervisor ships sealed
spool segments in batches (`shipper`) to a destination (`destinations`).
"""
