"""Configuration: process settings, tenants, and the LLM provider settings; parsed once, typed."""
