"""The performance regression gate: ratios measured in one run against committed baselines."""
