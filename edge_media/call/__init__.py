"""The video call with the county clerk: WebRTC media, signalling, echo cancellation."""
