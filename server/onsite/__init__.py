"""On-site service (issue 6): policy, calendar, coverage, pricing, eligibility, quote."""
