"""The lean upstream client: the HTTP leg of a model call, for the Agents SDK's stock models."""
