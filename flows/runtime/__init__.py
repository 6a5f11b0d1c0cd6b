"""Process and server plumbing: the embedded API, lifecycle, the server stack, runners, stderr."""
