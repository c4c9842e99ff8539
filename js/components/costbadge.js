// Cost and on-chain receipt of one job: the price paid and a short, linkable transaction hash.

import { h } from "./dom.js";
import { formatUsd, shortHash } from "./format.js";

export function costBadge(costUsd, receipt) {
  if (costUsd == null && !receipt) return null;
  const parts = [];
  if (costUsd != null) parts.push(h("span", { class: "ssw-cost__amount", testid: "cost-amount" }, formatUsd(costUsd)));
  if (receipt?.transaction) {
    const label = `tx ${shortHash(receipt.transaction)}`;
    const title = [receipt.transaction, receipt.payer && `payer ${receipt.payer}`].filter(Boolean).join("\n");
    parts.push(
      receipt.explorer_url
        ? h("a", { class: "ssw-cost__tx", href: receipt.explorer_url, target: "_blank", rel: "noopener", title, testid: "receipt" }, label)
        : h("code", { class: "ssw-cost__tx", title, testid: "receipt" }, label),
    );
  }
  const network = receipt?.network_name || receipt?.network;
  if (network) parts.push(h("span", { class: "ssw-cost__network" }, network));
  return h("div", { class: "ssw-cost", testid: "cost-badge" }, parts);
}
