"""Keeping polled feeds fresh: subscriptions, the refresh-ahead pass and WebSub announcements."""
