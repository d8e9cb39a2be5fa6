"""The kiosk's video call with the county clerk: WebRTC (aiortc) through the county's Janus VideoRoom."""
