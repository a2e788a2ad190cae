"""Schedules: interval and cron fire times, and the scheduler role that turns them into tasks."""
