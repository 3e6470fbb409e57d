"""Worker processes and the shared-memory ring they are fed through."""
