"""Tests of the test fakes (not the product): run by scripts/test before the product suite."""
