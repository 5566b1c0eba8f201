"""Prometheus exporter for Cisco CMX Connect guest Wi-Fi sessions."""
