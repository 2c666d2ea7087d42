// js-libp2p 3 calls Promise.withResolvers (ES2024), which Node 20 lacks. This module is
// imported first by every entry point, so it runs before any libp2p module is evaluated.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
