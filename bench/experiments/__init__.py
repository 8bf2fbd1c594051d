"""Recipe experiments for issue 9 (not part of ``make bench``); see bench/README.md."""
