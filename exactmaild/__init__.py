"""exactmaild: the daemon that owns a practice's email account.

It drains a spool of outgoing mail over SMTP at a paced rate under a hard
daily sending limit, checks the mailbox on a schedule, and reports to systemd
and Prometheus.
"""

__version__ = "0.1.0"
