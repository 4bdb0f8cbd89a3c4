"""trioconn: live data over WebSockets for trio."""
