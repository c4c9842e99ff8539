// JobCard widget: one live job.
//
// Traits:  job  (job record, see js/README.md; null or {} before the job exists)
// Requests (each answered by one reply, see components/requests.js): {type:"retry"|"resume", key}

import "./css/base.css";
import { createShell } from "./components/connection.js";
import { isolateKeys, listen } from "./components/dom.js";
import { cardRequest, createJobCard } from "./components/jobcard.js";
import { createLightbox } from "./components/lightbox.js";
import { startView } from "./components/view.js";

function render({ model, el, signal: outer }) {
  const { signal, dispose, ticker, connection, requests } = startView(model, el, outer);
  const lightbox = createLightbox();
  const root = createShell("ssw-jobcard", connection, lightbox.node);
  const body = root.querySelector(".ssw-body");
  isolateKeys(root);
  el.append(root);
  let card = null;
  let stopTicking = null;

  const onAction = (type, job) => {
    if (type === "open") lightbox.open([{ key: job.key, url: job.result.url, caption: job.prompt }]);
    else return requests.send(cardRequest(type, job));
  };

  function update() {
    const job = model.get("job");
    if (!job || job.key == null) { // the kernel's default is {} until a job exists
      card?.node.remove();
      card = null;
    } else if (!card) {
      card = createJobCard(job, { onAction, live: true });
      body.prepend(card.node);
    } else card.update(job);
    if (card?.running && !stopTicking) stopTicking = ticker.add(card.tick);
    else if (!card?.running && stopTicking) {
      stopTicking();
      stopTicking = null;
    }
  }

  listen(model, signal, "change:job", update);
  update();
  return dispose;
}

export default { render };
