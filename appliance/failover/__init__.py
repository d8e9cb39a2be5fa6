"""Terminal failover (issue 10): the terminal's side of the lease, the pair link, the role."""
