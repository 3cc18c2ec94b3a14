"""One channel interface, three ways to reach WhatsApp: cloud, web, sandbox."""

from __future__ import annotations

from crm.whatsapp.channels.base import Channel
from crm.whatsapp.models import WhatsAppProfile


def channel_for(profile: WhatsAppProfile) -> Channel:
    """The channel that speaks for `profile`."""
    from crm.whatsapp.channels import cloud, sandbox, web

    implementations = {"cloud": cloud.CloudChannel, "web": web.WebChannel,
                       "sandbox": sandbox.SandboxChannel}
    return implementations[profile.provider](profile)
