"""SMTP: one session per connection, on aiosmtpd (fakemx/smtp/seam.py is the only
module that touches aiosmtpd's insides)."""

from fakemx.smtp.session import FakeSMTP

__all__ = ["FakeSMTP"]
