"""Application families: renderers that decide what is sent for each app type."""
