"""MTA-STS (RFC 8461): the policy host fakemx serves beside its SMTP server and DNS."""
