"""Object stores under repositories: the Store protocol and its implementations."""
