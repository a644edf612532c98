/* abi_minor_newer.c -- a test plugin built for a newer minor ABI than the
 * host's: it may use fields the host does not know, so it is refused. */
#include "loom/plugin.h"

static const loom_plugin minor_plugin = {
    .abi_major = LOOM_ABI_MAJOR,
    .abi_minor = LOOM_ABI_MINOR + 1,
    .plugin_size = sizeof(loom_plugin),
    .lambda_size = sizeof(loom_lambda),
    .provider_size = sizeof(loom_provider),
    .option_size = sizeof(loom_option),
    .name = "abi_minor_newer",
};

LOOM_PLUGIN_DEFINE(abi_minor_newer)
{
    return &minor_plugin;
}
