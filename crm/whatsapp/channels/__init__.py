"""One channel interface, three ways to reach WhatsApp: cloud, web, sandbox."""

from __future__ import annotations

from crm.whatsapp.channels import cloud, sandbox, web
from crm.whatsapp.channels.base import Channel
from crm.whatsapp.models import WhatsAppProfile


def channel_class(provider: str) -> type[Channel]:
    """The channel implementation of `provider` (what it can do is known without a profile)."""
    implementations = {"cloud": cloud.CloudChannel, "web": web.WebChannel,
                       "sandbox": sandbox.SandboxChannel}
    return implementations[provider]


def channel_for(profile: WhatsAppProfile) -> Channel:
    """The channel that speaks for `profile`."""
    return channel_class(profile.provider)(profile)
