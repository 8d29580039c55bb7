"""The gateway: REST job API, per-job drivers and the scheduler (an entry point: it may
import service configs and deploy services; the core never imports it)."""
