/* anthropic.h -- the entry of the anthropic provider plugin when linked in.
 *
 * Everything else about the plugin is private to anthropic.c. */
#ifndef LOOM_PLUGINS_ANTHROPIC_H
#define LOOM_PLUGINS_ANTHROPIC_H

#include "loom/plugin.h"

#ifdef LOOM_BUILTIN_PLUGIN
/* The entry of the plugin when linked into the host (see LOOM_PLUGIN_DEFINE). */
const loom_plugin *loom_builtin_anthropic_entry(void);
#endif

#endif
