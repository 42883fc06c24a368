"""What happens to a chat request between the API and the upstream."""
