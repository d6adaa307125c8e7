"""twistd plugin: ``twistd -n sylk-pushserver --config_dir DIR``."""

from zope.interface import implementer

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin


@implementer(IServiceMaker, IPlugin)
class SylkPushServiceMaker:
    tapname = "sylk-pushserver"
    description = "Sylk Pushserver: Apple and Firebase push notifications for RTC servers"

    @property
    def options(self):
        from sylkpush.cli import PluginOptions
        return PluginOptions

    def makeService(self, options):
        from twisted.python import usage

        from sylkpush.cli import read_settings
        from sylkpush.config import ConfigError
        from sylkpush.logs import setup_logging
        from sylkpush.service import DRAIN_TIMEOUT, PushServer
        try:
            settings = read_settings(options["config_dir"], options["ip"], options["port"],
                                     options["debug"] or None)
        except ConfigError as exc:
            raise usage.UsageError(str(exc))
        parent = getattr(options, "parent", None) or {}
        setup_logging(foreground=bool(parent.get("nodaemon")), debug=settings.debug,
                      log_file=settings.log_file if settings.log_to_file else "",
                      debug_hpack=settings.debug_hpack, forward_twisted=False)
        if settings.workers > 1:
            import logging
            logging.getLogger("sylkpush").warning(
                "workers = %d in general.ini: twistd runs one process; run sylk-pushserver for several",
                settings.workers)
        drain = options["drain_timeout"]
        return PushServer(settings, drain_timeout=DRAIN_TIMEOUT if drain is None else drain,
                          handle_sighup=True)


serviceMaker = SylkPushServiceMaker()
