"""Docker's volume plugin protocol, served by the node daemon.

``driver.VolumeDriver`` is what the endpoints mean (create, mount by container ID, ...):
it answers decoded requests with JSON-ready results and owns the plugin's reference
counts. ``server.PluginServer`` is the transport: HTTP/1.1 on a unix socket, parsed by
h11, one task per connection. Either is tested without the other.
"""

from mountd.plugin.driver import MEDIA_TYPE, VolumeDriver
from mountd.plugin.server import PluginServer

__all__ = ["MEDIA_TYPE", "PluginServer", "VolumeDriver"]
