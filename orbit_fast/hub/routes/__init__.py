"""The hub's HTTP routes, one APIRouter per area (jobs, runs, events, auth, users, system,
dashboard); `hub.app.create_app` assembles them. What they share (who is asking, the Hub,
errors, the OpenAPI error answers) is in deps, errors and openapi."""
