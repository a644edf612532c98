/* abi_major_3.c -- a test plugin built for a future major ABI: refused
 * after reading its version only (a major 3 may lay out everything after
 * the two version fields differently). */
#include "loom/plugin.h"

static const loom_plugin major_plugin = {
    .abi_major = 3,
    .abi_minor = 0,
    .plugin_size = sizeof(loom_plugin),
    .lambda_size = sizeof(loom_lambda),
    .provider_size = sizeof(loom_provider),
    .option_size = sizeof(loom_option),
    .name = "abi_major_3",
};

LOOM_PLUGIN_DEFINE(abi_major_3)
{
    return &major_plugin;
}
